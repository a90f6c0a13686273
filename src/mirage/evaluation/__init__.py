"""Safety evaluation: benchmark -> attack -> generation -> judges -> metrics -> results files."""
