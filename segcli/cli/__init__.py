"""The `segcli` command line: app.py registers commands; each command parses, calls the library, renders."""
