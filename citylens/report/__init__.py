"""The report: figures, pictures, samples and the self-contained HTML page."""
