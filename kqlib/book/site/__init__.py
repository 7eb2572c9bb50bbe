"""The HTML site: the Jupyter Book build, the fact explorer, the tidy-data export, static files."""
