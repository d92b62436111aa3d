"""Command line: one small module per command group (parse → run → render)."""
