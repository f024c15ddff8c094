"""The shipped training recipes: one YAML file per recipe (package data, ``gatelab.recipes``)."""
