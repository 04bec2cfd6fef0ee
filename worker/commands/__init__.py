"""One module per ``checus-worker`` subcommand."""
