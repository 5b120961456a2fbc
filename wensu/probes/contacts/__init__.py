"""Contacts: ESM-style logistic regression on symmetrised, APC-corrected attention maps."""
