"""safemerge.data"""
