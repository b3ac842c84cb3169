"""The Splunk add-on TA-fti: its source tree and the build that packages it."""
