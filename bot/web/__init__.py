"""The web app: `casebot serve` (bot/web/app.py), one module per tab, the rendering they share."""
