"""The bottom layer: errors, registries, typed configs, cache paths, seeding. Imports nothing above it."""
