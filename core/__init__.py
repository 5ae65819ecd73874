"""joulestream core: settings, event contracts, carbon methodology. Depends on libraries only."""
