"""Where the project lives: the one place to set the repository's address.

``REPO_URL`` is a placeholder owner (``rscc-companion``): a fork sets its own address here, and
the README's launch links and the notebooks' Colab cells are meant to read it from here."""
from __future__ import annotations

REPO_URL = "https://github.com/rscc-companion/rscc"
