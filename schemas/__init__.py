"""Synctrack's vocabulary: settings, Codat event normalisation, API models. Imports nothing from the app."""
