"""The README's demo: lme4's sleepstudy model fitted with bayesmix, printed as lme4 prints it."""

import bayesmix as bm

sleep = bm.load_dataset("sleepstudy")
m = bm.lmer("Reaction ~ Days + (Days | Subject)", data=sleep, data_name="sleepstudy")
print(m.summary())
print()
print("Conditional modes of the first three subjects:")
print(m.ranef["Subject"].head(3))

cbpp = bm.load_dataset("cbpp")
g = bm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", data=cbpp, family="binomial",
             data_name="cbpp")
print()
print(g.summary())
