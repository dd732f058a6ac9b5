"""Flower app for federations of medseg nodes."""
