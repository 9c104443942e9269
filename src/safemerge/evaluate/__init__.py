"""safemerge.evaluate"""
