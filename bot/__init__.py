"""casebot: a case-review assistant for treatment-resistant systemic sclerosis, answering only from cited cases."""
