"""Config loading: haproxy.cfg and keepalived.conf into typed models, with diagnostics.

Contract of the two parsers (they never print and never raise on bad input):

    keeplb.config.haproxy.parse(paths, env=None) -> (HaproxyConfig, Diagnostics)
    keeplb.config.keepalived.parse(path, defines=(), env=None) -> (KeepalivedConfig, Diagnostics)
"""
