"""Policies: parsed, validated models; pure retention and schedules."""
