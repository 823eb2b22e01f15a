"""The command line: the parser, the commands, the flags built from typed configs, and how faults are reported."""
