"""Test helpers shipped with the package so users can test their own configs offline (like moto)."""
