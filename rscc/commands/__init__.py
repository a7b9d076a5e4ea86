"""One module per `rscc` sub-command; see rscc/cli.py."""
