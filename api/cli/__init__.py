"""The xlsearch command: one module per group of subcommands."""
