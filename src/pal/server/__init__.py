"""The pal server: message platform, control API and (later) web workbench and Lark host."""
