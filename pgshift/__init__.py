"""pgshift: the engine behind the migration tasks.

Plain Python: it knows nothing of Invoke or questionary, raises ``pgshift.errors`` exceptions and
returns data. Importing this package is cheap; heavy libraries are imported by the modules that wrap
them, when they are first used.
"""
