"""Command-line glue (Options and makeService) for each netplugins service."""
