"""The repository around the package: its docs, README, packaging, code style, benchmark
and example site."""
