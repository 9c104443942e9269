"""safemerge.study"""
