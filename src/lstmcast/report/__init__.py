"""What a run shows people: report.html (html.py) and every PNG (plots.py)."""
