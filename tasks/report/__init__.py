"""What the network learned, drawn: figures, unit atlas and pages, the HTML report and explorer."""
