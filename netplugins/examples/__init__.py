"""
Example applications to serve with netplugins (C{twistd np-wsgi --app ...}).
"""
