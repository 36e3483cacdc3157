"""Cohorts: session identifiers and roles, session sheets, the on-disk layout, the plan."""
