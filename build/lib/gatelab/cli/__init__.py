"""The ``gatelab`` command line: parsing, and every table and message it prints."""
