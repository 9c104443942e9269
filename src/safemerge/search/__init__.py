"""safemerge.search"""
