from toolkit.cli import run_entry

run_entry()
