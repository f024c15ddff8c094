"""The shipped variant specs: one YAML file per variant (package data, ``gatelab.ablations``)."""
