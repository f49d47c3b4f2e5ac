"""The web page the daemon serves for neighbours who never open a terminal (see meshnode.web.app)."""
