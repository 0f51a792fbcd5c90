"""The model specification: lme4 formulas parsed, model matrices built as R builds them, random-effects terms, and the compiled model with the model-frame state that new data needs."""
