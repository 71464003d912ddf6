"""Signed result webhooks (Standard Webhooks): who to send to, how a POST is signed, delivery at least once."""
