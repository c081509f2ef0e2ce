"""Tests of conch.aio, and the view that runs the contract suite through it."""
