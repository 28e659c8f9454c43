"""Presentation: the run's report (Markdown and HTML), its figures, lessons and model cards."""
