"""`ameide-migrate`, the command line: `main` assembles it and ends every mistake as one
`FAILED:` line; a module per group of verbs, as in `commands`, parses that group and prints."""
