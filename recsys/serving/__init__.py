"""Top-k serving from an export: ``export_run`` writes it, ``ExportedRecommender`` answers."""
