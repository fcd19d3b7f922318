// Admin page.
