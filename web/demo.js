// Demo app.
