"""Run machinery: many (class, seed) runs safely (locks, failure isolation), the results
tables and the per-class reports. The method itself lives in the top-level modules."""
