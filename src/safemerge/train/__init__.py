"""safemerge.train"""
