"""The study: profiles, the notebook runner (`make reproduce`) and the notebook test (`make test`)."""
