"""safemerge.merge"""
