"""Calendar units every layer shares: a year is 365 days (8,760 hours), a month a twelfth of
it (730 hours), a quarter a quarter of it. Times inside are in hours or seconds; dates meet
hours only through `sim.config.scenario.hours_after_start`."""

HOURS_PER_YEAR = 8760.0
MONTHS_PER_YEAR = 12.0
HOURS_PER_MONTH = HOURS_PER_YEAR / MONTHS_PER_YEAR
HOURS_PER_QUARTER = HOURS_PER_YEAR / 4.0
