"""One module per ``mathrl`` subcommand: ``add_arguments(parser)`` and a ``run(args)`` it sets."""
