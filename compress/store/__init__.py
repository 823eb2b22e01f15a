"""The bottom layer: result rows, the SQLite store, the workdir's layout, atomic files."""
