"""What a run leaves for people: cohort tables, per-session status, the HTML report."""
