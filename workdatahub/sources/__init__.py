"""Domain specs (`data_sources.yml`) and file discovery."""
