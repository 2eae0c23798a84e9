"""The operator's programs behind the command line: the local development stack,
enrolling an imported list, broadcasting to a segment."""
